"""The control socket: one command table shared by server and client (`protocol`), the server (`server`)."""
