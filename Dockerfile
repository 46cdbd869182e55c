# One image for the scheduler (`clipsched serve`) and the learner (`clipsched train`):
# Python 3.11, CPU-only torch, the PostgreSQL driver. docker-compose.yml runs both.
#   docker build -t clipsched:local .
#   docker run --rm -p 127.0.0.1:8000:8000 -v clipsched-data:/data clipsched:local
FROM python:3.11-slim

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1

# CPU wheels of torch (PyPI's default Linux wheel is the multi-GB CUDA build)
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

WORKDIR /app

# Dependencies first, from pyproject.toml alone, so that a code change reuses this layer.
COPY pyproject.toml constraints.txt ./
RUN python -c "import tomllib; p = tomllib.load(open('pyproject.toml', 'rb'))['project']; \
print('\\n'.join(p['dependencies'] + p['optional-dependencies']['postgres']))" \
    > /tmp/requirements.txt
RUN pip install --extra-index-url "$TORCH_INDEX_URL" -c constraints.txt -r /tmp/requirements.txt

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
