"""The compose stack on a Docker engine (`engine`) and the clients that drive it (`harness`):
`make test-stack` (tests/stack) and `bench/stack.py`."""
