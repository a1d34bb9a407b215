"""The test suite; a package, so that `tests.conftest` is this one and never a `tests` that another distribution installs (torch-fidelity ships one)."""
