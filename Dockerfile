# Two images from one Dockerfile (docker-compose.yml builds each):
#   scheduler: `clipsched serve`, the client and the service's commands, with the
#              PostgreSQL driver; the core install, no torch, MuJoCo or TensorBoard.
#   learner:   the scheduler image plus the `learner` extra (CPU-only torch, MuJoCo,
#              gymnasium, TensorBoard) for `clipsched train`.
#   docker build --target scheduler -t clipsched-scheduler:local .
#   docker build --target learner -t clipsched-learner:local .
#   docker run --rm -p 127.0.0.1:8000:8000 -v clipsched-data:/data clipsched-scheduler:local
FROM python:3.11-slim AS scheduler

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that a code change reuses this layer.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" \
    > /tmp/requirements.txt
RUN pip install -c constraints.txt -r /tmp/requirements.txt

COPY README.md ./
COPY scheduler_service ./scheduler_service
COPY learner ./learner
RUN pip install --no-deps . \
    && useradd --create-home --uid 10001 clipsched \
    && mkdir -p /data /state \
    && chown clipsched:clipsched /data /state

USER clipsched
# Named volumes mounted here start with this ownership.
VOLUME ["/data", "/state"]

ENV CLIPSCHED_HOST=0.0.0.0 \
    CLIPSCHED_PORT=8000 \
    CLIPSCHED_DATABASE_URL=sqlite:////data/clipsched.db
EXPOSE 8000
CMD ["clipsched", "serve"]


FROM scheduler AS learner

# CPU wheels of torch (PyPI's default Linux wheel is the multi-GB CUDA build)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
USER root
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\\n'.join(p['optional-dependencies']['learner']))" > /tmp/learner.txt \
    && pip install --extra-index-url "$TORCH_INDEX_URL" -c constraints.txt -r /tmp/learner.txt
USER clipsched
CMD ["clipsched", "train", "--help"]
