# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
WHEELS  := $(wildcard /opt/wheels)
PIPOPTS := -q $(if $(WHEELS),--find-links $(WHEELS))
# systemd: only for `systemd-analyze verify` of deploy/systemd/qosd.service in the tests.
APT_PKGS := iperf3 iproute2 ethtool iputils-ping tmux systemd

.PHONY: install system-deps test unit integration lint-imports bench demo clean

install: $(STAMP)

system-deps:
	@missing=""; \
	for p in $(APT_PKGS); do dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing >/dev/null; \
	fi

$(STAMP): pyproject.toml | system-deps
	python3 -m venv $(VENV)
	$(PY) -m pip install $(PIPOPTS) torch==2.13.0
	$(PY) -m pip install $(PIPOPTS) -e '.[collectives,lab,test]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -p no:cacheprovider

unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests

integration: install
	$(PY) -m pytest -q -p no:cacheprovider integration

# The layer contracts of pyproject's [tool.importlinter]; tests/test_import_contracts.py runs
# them too, so `make test` and `make unit` fail when one breaks.
lint-imports: install
	$(VENV)/bin/lint-imports --no-cache

bench: install
	$(PY) -m integration.bench

demo: install
	$(VENV)/bin/qosd demo

clean:
	rm -rf $(VENV) build *.egg-info
