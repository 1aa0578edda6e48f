"""Helpers shared by the tests (imported as ``support.<module>``; tests/ is on sys.path
because pytest's rootdir-relative import puts a test file's folder there)."""
