"""The manifest: `conf.d/*.toml` validated into frozen models (`models`), and what is deployed
today turned into a manifest (`importer`). Touches no process."""
