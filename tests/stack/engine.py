"""Moved to `testbed.stack.engine` (bench/stack.py drives the same stack); this name stays
for tests/deploy/test_standins.py until it imports from there."""

from testbed.stack.engine import nginx_conf_for_debian

__all__ = ["nginx_conf_for_debian"]
