# Two commands for a new user: `make demo` and `make test`. Everything else is below them.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   := .venv
PY     := $(VENV)/bin/python
RDV    := $(VENV)/bin/rendezvous
# MLServer's dependencies clash with PyFlink's: it gets its own virtualenv, as it would get its own container
MLSV   := .venv-mlserver

.PHONY: setup demo test test-unit faults chaos bench bench-stages bench-handover bench-model up down status clean

setup: $(VENV)/.installed $(MLSV)/.installed build/jars/.resolved build/jars/flink/rendezvous-jvm.jar build/jars/beam/rendezvous-beam-loopback.jar build/jars/metrics/rendezvous-metrics-prometheus.jar artifacts/models/.trained

$(VENV)/.installed: requirements.lock pyproject.toml
	@echo "==> creating $(VENV) and installing pinned Python dependencies (requirements.lock)"
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required (PyFlink 2.3 wheels); set PYTHON=/path/to/python3.11"'
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -r requirements.lock
	$(PY) -m pip install -q --no-deps -e .
	@touch $@

$(MLSV)/.installed: requirements-mlserver.lock
	@echo "==> creating $(MLSV) for MLServer and installing its pinned dependencies (requirements-mlserver.lock)"
	@$(PYTHON) -c 'import sys; assert sys.version_info[:2] == (3, 11), "Python 3.11 is required; set PYTHON=/path/to/python3.11"'
	test -x $(MLSV)/bin/python || $(PYTHON) -m venv $(MLSV)
	$(MLSV)/bin/python -m pip install -q --upgrade pip
	$(MLSV)/bin/python -m pip install -q -r requirements-mlserver.lock
	@touch $@

build/jars/.resolved: pom.xml
	@echo "==> resolving the Kafka broker and Flink Kafka connector jars from Maven Central (pom.xml)"
	@command -v mvn >/dev/null || { echo "Maven is required: apt install maven"; exit 1; }
	@command -v java >/dev/null || { echo "Java 17 is required: apt install openjdk-17-jdk"; exit 1; }
	rm -rf build/jars
	mvn -q -B package
	@touch $@

# the project's few JVM classes (the routed Kafka record serializer), compiled against the connector and Flink
build/jars/flink/rendezvous-jvm.jar: $(wildcard jvm/src/io/rendezvous/flink/*.java) build/jars/.resolved $(VENV)/.installed
	@echo "==> compiling the project's JVM classes (jvm/) into $@"
	rm -rf build/jvm-classes && mkdir -p build/jvm-classes
	javac -nowarn --release 17 -d build/jvm-classes \
	  -cp "$$(ls build/jars/flink/flink-sql-connector-kafka-*.jar):$$($(PY) -c 'import pyflink, pathlib; print(next((pathlib.Path(pyflink.__file__).parent / "lib").glob("flink-dist-*.jar")))')" \
	  $(wildcard jvm/src/io/rendezvous/flink/*.java)
	jar cf $@ -C build/jvm-classes .

# Beam's gRPC server factory as flink-python 2.3 ships it binds the Python workers' servers to every
# interface; this replacement binds them to loopback (jvm/beam/, see its comment and README "Listeners")
build/jars/beam/rendezvous-beam-loopback.jar: jvm/beam/org/apache/beam/sdk/fn/server/ServerFactory.java build/jars/.resolved $(VENV)/.installed
	@echo "==> compiling the loopback gRPC server factory for PyFlink's Python workers (jvm/beam/) into $@"
	rm -rf build/jvm-beam-classes && mkdir -p build/jvm-beam-classes $(@D)
	javac -nowarn --release 17 -d build/jvm-beam-classes \
	  -cp "$$($(PY) -c 'import pyflink, pathlib; print(next((pathlib.Path(pyflink.__file__).parent / "opt").glob("flink-python-*.jar")))')" \
	  jvm/beam/org/apache/beam/sdk/fn/server/ServerFactory.java
	jar cf $@ -C build/jvm-beam-classes .

# Flink's Prometheus reporter (the apache-flink wheel's plugins/metrics-prometheus/) binds its HTTP server to every
# interface; this factory makes the same reporter bind the runtime's address (jvm/metrics/, README "Exported metrics")
build/jars/metrics/rendezvous-metrics-prometheus.jar: jvm/metrics/org/apache/flink/metrics/prometheus/BoundPrometheusReporterFactory.java jvm/metrics/META-INF/services/org.apache.flink.metrics.reporter.MetricReporterFactory $(VENV)/.installed
	@echo "==> compiling the loopback-bound Prometheus reporter factory (jvm/metrics/) into $@"
	rm -rf build/jvm-metrics-classes && mkdir -p build/jvm-metrics-classes $(@D)
	javac -nowarn --release 17 -d build/jvm-metrics-classes \
	  -cp "$$($(PY) -c 'import pyflink, pathlib; p = pathlib.Path(pyflink.__file__).parent; print(":".join(str(next(g)) for g in ((p / "plugins" / "metrics-prometheus").glob("flink-metrics-prometheus-*.jar"), (p / "lib").glob("flink-dist-*.jar"))))')" \
	  jvm/metrics/org/apache/flink/metrics/prometheus/BoundPrometheusReporterFactory.java
	jar cf $@ -C build/jvm-metrics-classes . -C jvm/metrics META-INF/services

artifacts/models/.trained: $(VENV)/.installed $(wildcard training/*.py) schemas/features.py jobs/external_state/features.py
	@echo "==> training the demo fraud models from synthetic data (artifacts/models)"
	$(PY) -m training.train --out artifacts/models
	@touch $@

up: setup
	$(RDV) up

down:
	@test -x $(RDV) && $(RDV) down || true

status:
	$(RDV) status

demo: setup
	$(RDV) demo

# the report's test draws it in headless Chromium (tests/e2e/test_report.py): installed when missing and root
build/.chromium:
	@if command -v chromium >/dev/null 2>&1 || command -v chromium-browser >/dev/null 2>&1; then \
	  mkdir -p $(@D) && touch $@; \
	elif [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then \
	  echo "==> installing Chromium for the report's headless browser test (apt-get install -y chromium)"; \
	  apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q chromium && mkdir -p $(@D) && touch $@; \
	else \
	  echo "Chromium is missing: the report's test (tests/e2e/test_report.py) will fail until it is installed:"; \
	  echo "  sudo apt-get install chromium   (Debian/Ubuntu; any chromium or chromium-browser on PATH will do)"; \
	fi

test: setup build/.chromium
	$(PY) -m pytest -q tests -m "not faults" --durations=15

# the fault tests (a TaskManager, the broker, a Python worker, a model server killed under load): minutes
faults: setup
	$(PY) -m pytest -q -s tests/e2e/test_faults.py

test-unit: setup
	$(PY) -m pytest -q tests -m "not e2e"

# the fault tests, five times longer, a fault every 20 s (TaskManager, Python worker): minutes, not seconds
chaos: setup
	RENDEZVOUS_CHAOS_SCALE=5 $(PY) -m pytest -q -s tests/e2e/test_faults.py

bench: setup
	$(PY) -m bench $(BENCH_ARGS)

bench-stages: setup
	$(PY) -m bench.stages $(BENCH_ARGS)

bench-handover: setup
	$(PY) -m bench.handover $(BENCH_ARGS)

bench-model: setup
	$(PY) -m bench.model_job $(BENCH_ARGS)

clean: down
	rm -rf run build artifacts $(VENV) $(MLSV)
