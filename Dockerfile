# onemodel: one Keras model server + Gunicorn web tier in one container.
#
#   docker build -t onemodel .                          # bakes the VGG16 ImageNet weights (~530 MB)
#   docker build --build-arg BAKE_WEIGHTS=0 -t onemodel .   # no download at build time
#   docker run -p 127.0.0.1:8000:8000 onemodel
#
# The default command starts Gunicorn; its master starts a private model server (no
# MODEL_SERVER_ADDRESS) and stops it last on SIGTERM. For split tiers, run
# `python model_server.py` and Gunicorn with MODEL_SERVER_ADDRESS (see docker-compose.yml).
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

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so editing src/ does not reinstall TensorFlow;
# pinned by constraints.txt (the versions the tests ran with). TensorFlow's C++ headers
# (~290 MB) only serve to compile custom ops: removed.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\n'.join(p['dependencies'] + p['optional-dependencies']['model']))" > /tmp/requirements.txt \
    && pip install --no-cache-dir -c constraints.txt -r /tmp/requirements.txt \
    && rm /tmp/requirements.txt \
    && rm -rf "$(python -c "import sysconfig; print(sysconfig.get_paths()['purelib'])")/tensorflow/include"

# The package itself (no dependency resolution: they are all installed above).
COPY src ./src
RUN pip install --no-cache-dir --no-deps . && rm -rf build src/*.egg-info

COPY wsgi.py model_server.py gunicorn.conf.py ./

ENV HOST=0.0.0.0 \
    PORT=8000 \
    PYTHONUNBUFFERED=1 \
    TF_CPP_MIN_LOG_LEVEL=2

USER 10001:10001

# Optionally bake the VGG16 ImageNet weights into /home/app/.keras/models, so a container
# starts without a 528 MB download. Builds without internet access use BAKE_WEIGHTS=0.
RUN if [ "$BAKE_WEIGHTS" = "1" ]; then \
        python -c "import keras; keras.applications.VGG16(weights='imagenet')" \
        && ls -l /home/app/.keras/models; \
    fi

EXPOSE 8000

# Ready = a worker answers and the model server has loaded and warmed up the model. The
# first start may download the weights (no BAKE_WEIGHTS): allow up to 10 minutes.
HEALTHCHECK --interval=30s --timeout=10s --start-period=600s --retries=3 \
    CMD python -c "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/readyz' % os.environ.get('PORT', '8000'), timeout=8)"

STOPSIGNAL SIGTERM

# Exec form: Gunicorn is PID 1 and gets SIGTERM itself (workers stop, then the model server).
CMD ["gunicorn", "-c", "gunicorn.conf.py", "wsgi:app"]
