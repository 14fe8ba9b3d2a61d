"""The compose stack on a Docker engine (`engine`) and the clients that drive it (`harness`):
`make test-stack` (tests/e2e/stack) and `bench/stack.py`."""
