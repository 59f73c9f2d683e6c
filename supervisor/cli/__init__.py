"""`wsgictl`: the commands (`commands`, standard library only, since units call it), and one API
in the foreground (`serve_app`, run in the service's own Python)."""
