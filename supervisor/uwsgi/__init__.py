"""Everything the daemon knows about uWSGI: vassal options, instance naming, FIFO commands,
stats and log lines (`core`), the emperor process (`emperor`), the driver that runs APIs as
vassals (`driver`), and the files that run inside each vassal's own Python (`launcher`,
`vassal_boot`, `vassal_app`)."""
