"""What the daemon shows the world: Prometheus metrics (`metrics`), systemd (`systemd`)."""
