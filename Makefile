# Two commands do all set-up on a fresh machine:
#   make chat   create .venv, install, provision the model, index seeds/, start the chat
#   make test   create .venv, install (with test tools and Chromium), run the whole test suite

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)
PORT ?= 8000

.PHONY: chat test install install-test browser index lint bench clean

chat: $(STAMP) chat_app/.offline-ui/index.html
	$(BIN)/rag index seeds
	@echo "Sanad chat: http://127.0.0.1:$(PORT)  (Ctrl-C to stop)"
	CHAINLIT_APP_ROOT=chat_app RAG_CHAT_SOURCES=seeds $(BIN)/chainlit run chat_app/app.py \
		--host 127.0.0.1 --port $(PORT)

# Chainlit's page without its Google Fonts / KaTeX CDN links (nothing leaves the machine).
chat_app/.offline-ui/index.html: $(STAMP)
	CHAINLIT_APP_ROOT=chat_app $(BIN)/python chat_app/offline_ui.py

test: $(STAMP).test browser chat_app/.offline-ui/index.html
	$(BIN)/python -m pytest

install: $(STAMP)

$(STAMP):
	test -d $(VENV) || $(PYTHON) -m venv $(VENV)
	# torch first, pinned: the local CPU wheel, not the multi-GB CUDA build
	$(BIN)/pip install --disable-pip-version-check -q torch==2.13.0
	$(BIN)/pip install --disable-pip-version-check -q -e .
	touch $@

$(STAMP).test: $(STAMP)
	$(BIN)/pip install --disable-pip-version-check -q -e '.[test]'
	touch $@

# Debian's Chromium for the browser tests (Playwright's own browser download does not work offline).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
		echo "installing Debian's chromium for the browser tests"; \
		if [ "$$(id -u)" = 0 ]; then SUDO=; else SUDO=sudo; fi; \
		$$SUDO apt-get update -qq && $$SUDO apt-get install -y -qq chromium chromium-driver >/dev/null; }

lint: $(STAMP).test
	$(BIN)/ruff check rag tests chat_app bench

bench: $(STAMP)
	$(BIN)/python bench/index_bench.py

clean:
	rm -rf $(VENV) .pytest_cache
