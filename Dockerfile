# syntax=docker/dockerfile:1
# One image for every role: `alertpipe operator|ingestor|evaluator|deliverer` (ENTRYPOINT alertpipe).
# Stage `native` builds the evaluator's native hot path (native/evalcore: Rust, PyO3, maturin) as a
# wheel; stage `build` builds the alertpipe wheel; the last stage installs both into a venv with the
# exact versions of constraints.txt. Neither devstack/ nor tests/ reach the image (see .dockerignore).
# Pin the bases by digest in your own builds: --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:...
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm
ARG RUST_IMAGE=rust:1.95-slim-bookworm

# Debian bookworm's python3 is 3.11, the runtime's minor version: the extension is built for it
# (and bookworm's glibc, the runtime image's).
FROM ${RUST_IMAGE} AS native
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# hadolint ignore=DL3008
RUN apt-get update \
 && apt-get install -y --no-install-recommends python3 python3-dev python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY constraints.txt ./
COPY native/evalcore/ native/evalcore/
# hadolint ignore=DL3013
RUN python3 -m venv /opt/maturin \
 && /opt/maturin/bin/pip install --no-cache-dir -c constraints.txt maturin \
 && /opt/maturin/bin/maturin build --release --manifest-path native/evalcore/Cargo.toml \
      --interpreter python3 --compatibility linux --out /wheels

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
COPY pyproject.toml constraints.txt README.md ./
COPY alertpipe/ alertpipe/
COPY operator/ operator/
COPY workers/ workers/
RUN python -m pip wheel --no-deps --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    VIRTUAL_ENV=/opt/alertpipe \
    PATH=/opt/alertpipe/bin:$PATH
# A numeric, unprivileged user: the chart's runAsNonRoot can then verify it without a name lookup.
RUN groupadd --system --gid 10001 alertpipe \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent \
      --shell /usr/sbin/nologin alertpipe
# The wheel and constraints are bind-mounted from the build stage: no copy of them stays in a layer.
# pip compiles the bytecode here, so a read-only root filesystem costs nothing at start-up.
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    --mount=type=bind,from=native,source=/wheels,target=/native-wheels \
    --mount=type=bind,from=build,source=/src/constraints.txt,target=/tmp/constraints.txt \
    python -m venv "$VIRTUAL_ENV" \
 && "$VIRTUAL_ENV/bin/pip" install --no-cache-dir -c /tmp/constraints.txt /wheels/alertpipe-*.whl \
      /native-wheels/alertpipe_evalcore-*.whl \
 && python -c "import alertpipe_evalcore" \
 && alertpipe --help > /dev/null
USER 10001:10001
ENTRYPOINT ["alertpipe"]
CMD ["--help"]
