# make run   - start a development ktmail on loopback (set-up included)
# make test  - run the whole test suite with trial (set-up included)
# make bench - run the benchmarks in bench/ and print their figures

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEVCONFIG := ktmail-dev.ini
# every test and warning from our own code that is deprecated fails the run
TRIAL_ENV := PYTHONWARNINGS=error::DeprecationWarning:ktmail,error::DeprecationWarning:tests

.PHONY: run test bench certs install lint clean

$(STAMP): setup.cfg pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	# compat mode puts the project folder on sys.path, where twistd finds
	# twisted/plugins/ktmail_plugin.py (the default editable finder hides it)
	$(BIN)/python -m pip install --quiet --config-settings editable_mode=compat -e '.[test]'
	touch $@

install: $(STAMP)

certs: certs/server.pem

certs/server.pem:
	openssl req -x509 -newkey rsa:2048 -nodes -days 825 -subj /CN=localhost \
	  -addext subjectAltName=DNS:localhost,IP:127.0.0.1 \
	  -keyout certs/server.key -out certs/server.pem 2>/dev/null
	chmod 600 certs/server.key

run: install certs
	$(BIN)/python -m ktmail.devsetup $(DEVCONFIG)
	exec $(BIN)/twistd -n --pidfile= ktmail --config $(DEVCONFIG)

test: install certs
	$(TRIAL_ENV) $(BIN)/trial $(TRIAL_ARGS) tests

bench: install certs
	$(BIN)/python -m bench

lint: install
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check ktmail tests bench

clean:
	rm -rf $(VENV) _trial_temp* var $(DEVCONFIG) certs/server.pem certs/server.key
