# onemodel: one Keras model server + Gunicorn web tier in one container, installed from the
# same wheel users install (`pip install "onemodel-*.whl[model]"`).
#
#   docker build -t onemodel .                          # bakes the VGG16 ImageNet weights (~530 MB)
#   docker build --build-arg BAKE_WEIGHTS=0 -t onemodel .   # no download at build time
#   docker run -p 127.0.0.1:8000:8000 onemodel
#
# The default command is `onemodel serve`: Gunicorn's master (PID 1) starts a private model
# server (no MODEL_SERVER_ADDRESS) and stops it last on SIGTERM. For split tiers, run
# `onemodel model-server` and `onemodel serve` with MODEL_SERVER_ADDRESS (docker-compose.yml).

# --- Stage 1: the wheel, built by `python -m build` as a release would build it.
FROM python:3.11-slim AS wheel

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /build
COPY constraints.txt ./
RUN pip install --no-cache-dir -c constraints.txt build
COPY pyproject.toml README.md LICENSE ./
COPY src ./src
RUN python -m build --wheel --outdir /dist .

# --- Stage 2: the runtime, with the wheel and its [model] extra installed.
FROM python:3.11-slim

ARG BAKE_WEIGHTS=1

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH

# The unprivileged user the service runs as (the Kubernetes manifests expect uid 10001).
RUN groupadd --gid 10001 app \
    && useradd --uid 10001 --gid 10001 --home-dir /home/app --create-home \
        --shell /usr/sbin/nologin app \
    && install -d -o app -g app -m 0755 /home/app/.keras /home/app/.keras/models \
    && python -m venv "$VIRTUAL_ENV"

# Dependencies first, from pyproject.toml alone, so editing src/ does not reinstall TensorFlow;
# pinned by constraints.txt (the versions the tests ran with). TensorFlow's C++ headers
# (~290 MB) only serve to compile custom ops: removed.
COPY pyproject.toml constraints.txt /tmp/install/
RUN python -c "import tomllib; p = tomllib.load(open('/tmp/install/pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['model']))" > /tmp/install/requirements.txt \
    && pip install --no-cache-dir -c /tmp/install/constraints.txt -r /tmp/install/requirements.txt \
    && rm -rf "$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/tensorflow/include"

# The wheel from stage 1, as a user installs it (its dependencies are already satisfied).
COPY --from=wheel /dist /tmp/dist
RUN pip install --no-cache-dir -c /tmp/install/constraints.txt \
        "$(ls /tmp/dist/onemodel-*.whl)[model]" \
    && rm -rf /tmp/dist /tmp/install \
    && onemodel --version

# GRPC_PORT: the Open Inference Protocol over gRPC on 8001, as Triton (off outside the image).
ENV HOST=0.0.0.0 \
    PORT=8000 \
    GRPC_PORT=8001 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2

# No repository files: the service runs from the installed package in an empty directory.
WORKDIR /home/app
USER 10001:10001

# Optionally bake the VGG16 ImageNet weights into /home/app/.keras/models (`onemodel prepare`
# loads and warms the model once, and caches it converted to OpenVINO in ~/.cache/onemodel),
# so a container starts without a 528 MB download or TensorFlow, also on a read-only
# filesystem. Builds without internet access use BAKE_WEIGHTS=0.
RUN if [ "$BAKE_WEIGHTS" = "1" ]; then \
        onemodel prepare vgg16 && ls -l /home/app/.keras/models; \
    fi

EXPOSE 8000 8001

# Ready = a worker answers, the model server has loaded and warmed up the model and, with
# GRPC_PORT set, the gRPC server listens (/readyz checks all three). The
# first start may download the weights (no BAKE_WEIGHTS): allow up to 10 minutes.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=8)"

STOPSIGNAL SIGTERM

# Exec form: `onemodel serve` is Gunicorn's master, PID 1, and gets SIGTERM itself (workers
# stop, then the model server).
CMD ["onemodel", "serve"]
