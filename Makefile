# The two commands the README names.
#   make demo   build the library and run the C quickstart on the embedded default
#               (a SQLite file, target/quickstart.db)
#   make test   run every test (Rust, C, C++, valgrind, Python); ends "tests: N passed, N failed"

.PHONY: demo test
demo:
	$(MAKE) -s -C bindings/c run ARGS=sqlite:$(CURDIR)/target/quickstart.db

test:
	scripts/test-all
