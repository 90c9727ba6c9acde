# dicomgate: a DICOM C-STORE SCP that de-identifies (PS3.15 Annex E) and delivers to S3 or a folder.
#
#   docker build -t dicomgate .
#   docker run -d -p 11112:11112 -v /srv/dicomgate:/var/lib/dicomgate dicomgate
#
# BASE must be Debian bookworm with Python 3.11 (python3, venv, useradd, apt): the official image
# by default; bench/container-smoke builds on a local debootstrap image instead (registries are
# unreachable there), so nothing below depends on what only the official image has.
ARG BASE=python:3.11-slim-bookworm

# ---- stage 1: wheels of dicomgate and its runtime dependencies (no test extras), in a venv ---
FROM ${BASE} AS build
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
# A venv for the build tools: Debian's own python3 is externally managed (PEP 668).
RUN python3 -m venv /opt/build
# Dependencies first, from pyproject.toml alone, so that a code change reuses this layer.
COPY pyproject.toml ./
RUN python3 -c 'import tomllib; p = tomllib.load(open("pyproject.toml", "rb")); print("\n".join(p["build-system"]["requires"] + p["project"]["dependencies"]))' > /tmp/requirements.txt \
 && /opt/build/bin/pip wheel --wheel-dir /wheels --requirement /tmp/requirements.txt
COPY README.md ./
COPY dicomgate ./dicomgate
# `pip wheel .` resolves against the wheels above only, and the runtime's virtual environment
# (/opt/venv, copied whole below: same base, same interpreter path) gets exactly those wheels,
# installed by the build venv's pip: the runtime has neither pip nor setuptools.
RUN /opt/build/bin/pip wheel --no-index --find-links /wheels --wheel-dir /wheels . \
 && python3 -m venv --without-pip /opt/venv \
 && /opt/build/bin/pip --python /opt/venv/bin/python install --no-cache-dir --no-index \
        --find-links /wheels /wheels/dicomgate-*.whl

# ---- stage 2: runtime ----------------------------------------------------------------------
FROM ${BASE} AS runtime
# tesseract-ocr: the OCR of the Clean Pixel Data step (burned-in text); the node runs
# /usr/bin/tesseract. tini: PID 1, so that the node is not: it forwards SIGTERM to the node only
# and reaps orphans (the node starts worker processes, which run tesseract). Everything else
# comes as self-contained manylinux wheels (numpy, Pillow, pylibjpeg's decoders). The pins are
# bookworm's versions; override them with --build-arg.
ARG TESSERACT_VERSION=5.3.0-2
ARG TINI_VERSION=0.19.0-1+b3
# A fixed non-root uid/gid (10001) so that a bind-mounted data directory can be chowned to it.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
        "tesseract-ocr=${TESSERACT_VERSION}" "tini=${TINI_VERSION}" \
 && apt-get clean \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10001 dicomgate \
 && useradd --no-log-init --uid 10001 --gid 10001 --home-dir /var/lib/dicomgate --no-create-home \
        --shell /usr/sbin/nologin dicomgate \
 && install -d -o 10001 -g 10001 -m 0750 /var/lib/dicomgate

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PATH=/opt/venv/bin:$PATH \
    DICOMGATE_DATA_DIR=/var/lib/dicomgate \
    DICOMGATE_DESTINATION=file:///var/lib/dicomgate/delivered \
    DICOMGATE_OPS_HOST=0.0.0.0

WORKDIR /var/lib/dicomgate
USER 10001:10001
# The data directory: spool (received, acknowledged instances), SQLite state, the generated key,
# staging and the default file destination (delivered/). One volume, so that mounting one host
# folder keeps everything; a shared spool elsewhere (EFS) is DICOMGATE_SPOOL_DIR.
VOLUME ["/var/lib/dicomgate"]

# DICOM, DICOM TLS, ops HTTP (/healthz, /readyz, /metrics)
EXPOSE 11112 2762 8080
# C-ECHO to the node itself, calling AE title DICOMGATE_SCU (DICOMGATE_ECHO_AET): a node with
# allowed_calling_ae_titles must list it, and allowed_networks must include 127.0.0.1. A TLS-only
# node (DICOMGATE_PLAINTEXT=false) needs another check: dicomgate echo --tls ... 127.0.0.1 2762.
HEALTHCHECK --interval=30s --timeout=15s --start-period=60s --retries=3 \
    CMD ["dicomgate", "echo", "127.0.0.1", "11112"]
# SIGTERM: stop accepting, let open associations finish (shutdown_timeout, 30 s), drain, exit 0.
# Give the container more than that before SIGKILL (docker stop -t 60; ECS stopTimeout 120).
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/bin/tini", "--", "dicomgate"]
CMD ["serve"]

# The application last: the only layer a code change rebuilds. A COPY, not a bind mount of
# stage 1 in a RUN: buildah (podman build) does not key its layer cache on a mounted stage's
# content and would keep the old code.
COPY --from=build /opt/venv /opt/venv
