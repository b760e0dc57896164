# docent as a container: build, then a slim runtime that runs as a non-root
# user. Targets:
#   runtime (default)  the server, `docent serve`
#   models             the runtime plus Python's pip, for `docent models pull`
#                      (docker-compose.yml runs it once to fill the models volume)

FROM rust:1.95-slim-bookworm AS build
WORKDIR /src
# oniguruma (tokenizers) and ring are compiled with the C toolchain the image has.
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin docent \
    && install -m 0755 target/release/docent /usr/local/bin/docent

FROM debian:bookworm-slim AS base
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home-dir /data --shell /usr/sbin/nologin docent \
    && mkdir -p /data /models \
    && chown docent:docent /data /models
COPY --from=build /usr/local/bin/docent /usr/local/bin/docent
COPY config/ /etc/docent/
ENV DOCENT_DATA_DIR=/data \
    DOCENT_MODELS_DIR=/models
ENTRYPOINT ["docent"]

FROM base AS models
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-pip \
    && rm -rf /var/lib/apt/lists/*
USER docent
CMD ["models", "pull"]

FROM base AS runtime
USER docent
EXPOSE 8080
CMD ["serve", "--config", "/etc/docent/cluster.toml"]
