# One image for every Herald service; the command picks the role (herald auth|collect|dispatch|push).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY herald ./herald
COPY services ./services
COPY clients ./clients
# Herald editable, so push nodes serve clients/js/herald.js from this tree; its Python
# client (a dependency) from clients/python in the same call, never from an index.
RUN pip install --no-cache-dir ./clients/python -e . && useradd --system herald
USER herald
ENV HERALD_HOST=0.0.0.0
ENTRYPOINT ["herald"]
