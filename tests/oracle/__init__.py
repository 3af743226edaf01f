"""Scripts run by other implementations' own environments, as oracles for segpipe's tests."""
