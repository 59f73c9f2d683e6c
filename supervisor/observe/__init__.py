"""What the daemon sees without acting: exits (`watcher`), /proc (`procs`), socket queues
(`sockdiag`), the metrics snapshot and its totals (`sampler`), exception lines (`exceptions`)."""
