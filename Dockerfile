# syntax=docker/dockerfile:1
# The operator image: `securemodels run`, as UID 65532, on a read-only root filesystem.
#
# Runtime dependencies are the packages of pyproject's [project].dependencies and what they need, at the
# versions pinned in requirements/dev.lock, used as pip constraints: the image runs exactly the versions
# the tests ran, and there is no second lock file to keep in step. Development tools are not installed.

# python:3.11-slim-bookworm (Python 3.11.16, Debian 12), multi-platform index digest.
ARG PYTHON_IMAGE=python:3.11-slim-bookworm@sha256:a36c24f9cbdf4fd0f52d67f0823eeac19c2028c637cecc392d97f980d4fec56b

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1
WORKDIR /src
COPY requirements/dev.lock requirements/dev.lock
# The wheel's build backend, pinned; its own dependencies come from the same lock.
RUN pip install --constraint requirements/dev.lock hatchling==1.33.0 trove-classifiers==2026.9.21.13
COPY pyproject.toml README.md ./
COPY operator/ operator/
RUN pip wheel --no-deps --no-build-isolation --wheel-dir /wheels . \
    && python -m venv --without-pip /opt/securemodels \
    && pip --python /opt/securemodels/bin/python install --only-binary=:all: \
        --constraint requirements/dev.lock /wheels/secure_model_operator-*.whl

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="secure-model-operator" \
      org.opencontainers.image.description="Kubernetes operator for locked-down model serving" \
      org.opencontainers.image.licenses="Apache-2.0"
# Bytecode was compiled at install time; nothing is written at run time, so a read-only root works.
ENV PATH=/opt/securemodels/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
COPY --from=builder /opt/securemodels /opt/securemodels
# kopf names its identity after the user (getpass.getuser()), which fails for a UID without an account.
RUN echo "securemodels:x:65532:65532:secure-model-operator:/nonexistent:/usr/sbin/nologin" >> /etc/passwd \
    && echo "securemodels:x:65532:" >> /etc/group
# Numeric, so that Kubernetes' runAsNonRoot can verify it.
USER 65532:65532
EXPOSE 8080
ENTRYPOINT ["securemodels"]
CMD ["run"]
