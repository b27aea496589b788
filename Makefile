# Two commands do everything on a fresh machine: `make demo` and `make test`.
VENV    ?= .venv
PY      := $(VENV)/bin/python
STAMP   := $(VENV)/.installed
WHEELS  := $(wildcard /opt/wheels)
PIPOPTS := -q $(if $(WHEELS),--find-links $(WHEELS))
APT_PKGS := iperf3 iproute2 ethtool iputils-ping tmux

.PHONY: install system-deps test unit integration bench demo clean

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
	$(PY) -m pip install $(PIPOPTS) -e '.[test]'
	touch $(STAMP)

test: install
	$(PY) -m pytest -q -p no:cacheprovider

unit: install
	$(PY) -m pytest -q -p no:cacheprovider tests

integration: install
	$(PY) -m pytest -q -p no:cacheprovider integration

bench: install
	$(PY) -m integration.bench

demo: install
	$(VENV)/bin/qosd demo

clean:
	rm -rf $(VENV) build *.egg-info
