//! Examples, integration tests and benchmarks of cachemacro live in this package.
