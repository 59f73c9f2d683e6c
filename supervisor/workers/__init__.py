"""Worker services as the daemon's own children: the driver (`driver`)."""
