"""What the tests and the benchmarks both drive: real servers on loopback (`servers`), a
small real champion in a project's registry (`champion`) and the compose stack on a Docker
engine (`stack`). Not part of the raincast package; importable from the repository root."""
