# make run   - start a development ktmail on loopback (set-up included)
# make test  - run the whole test suite with trial (set-up included)
# make bench - run the benchmarks in bench/ and print their figures
# make messages - extract the web pages' texts and the spam rules' descriptions
#                 into ktmail/locale (needs gettext)
# make locale - compile the catalogues (.po -> .mo; both are committed)

PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
DEVCONFIG := ktmail-dev.ini
# every test and warning from our own code that is deprecated fails the run
# two workers: the suite is dominated by end-to-end tests that wait on real daemons
TRIAL_ARGS ?= -j2
TRIAL_ENV := PYTHONWARNINGS=error::DeprecationWarning:ktmail,error::DeprecationWarning:tests

.PHONY: run test bench certs install lint clean messages locale

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

LANGS := sv en
XGETTEXT := xgettext --language=Python --keyword=_ --keyword=N_ --keyword=n:1,2 \
  --from-code=UTF-8 --no-wrap --sort-by-file --package-name=ktmail

messages:
	$(XGETTEXT) --keyword=rule:3 -o ktmail/locale/ktmail.pot ktmail/web/*.py \
	  ktmail/services/spam/rules.py ktmail/services/spam/scoring.py
	for l in $(LANGS); do msgmerge --quiet --update --no-wrap --backup=none \
	  ktmail/locale/$$l/LC_MESSAGES/ktmail.po ktmail/locale/ktmail.pot; done

locale:
	for l in $(LANGS); do msgfmt --check -o ktmail/locale/$$l/LC_MESSAGES/ktmail.mo \
	  ktmail/locale/$$l/LC_MESSAGES/ktmail.po; done

lint: install
	$(BIN)/python -m pip install --quiet ruff
	$(BIN)/ruff check ktmail tests bench

clean:
	rm -rf $(VENV) _trial_temp* var $(DEVCONFIG) certs/server.pem certs/server.key
