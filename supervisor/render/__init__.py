"""Text made from a validated manifest for the world around the daemon: front-end configs (`proxy`)."""
