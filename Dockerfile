# One image for every Herald service; the command picks the role (herald auth|collect|dispatch|push).
FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY herald ./herald
COPY services ./services
COPY clients ./clients
# Editable, so push nodes serve clients/js/herald.js from this tree.
RUN pip install --no-cache-dir -e . && useradd --system herald
USER herald
ENV HERALD_HOST=0.0.0.0
ENTRYPOINT ["herald"]
