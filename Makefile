# The two public targets are the README's two commands.
.PHONY: run test

## make run: bring up the hypervisor stack with the dev configuration in config/
run:
	@scripts/run.sh

## make test: install missing prerequisites, then fmt, clippy, build and every test
test:
	@scripts/test.sh
