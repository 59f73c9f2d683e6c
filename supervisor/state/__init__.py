"""Who decides: the state model (`states`), a service's record (`service`), the events drivers
report (`events`), the driver interface (`drivers`), one service's lifecycle (`lifecycle`), the
supervisor with its one queue (`supervisor`), what outlives a daemon (`statefile`), status views
(`views`)."""
