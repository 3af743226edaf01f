"""Test data that is fetched or generated for the tests, never shipped in the package."""
