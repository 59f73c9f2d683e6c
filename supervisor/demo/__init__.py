"""Small apps for the demo manifest and the tests."""
