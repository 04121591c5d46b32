"""One module per security control: what it adds to the desired objects, and a pure check that judges
the live objects read back from the API server."""
