# syntax=docker/dockerfile:1
# The tether gateway in a small image: `docker build -t tether .`, then
#   docker run -p 7400-7403:7400-7403 -v tether-state:/var/lib/tether tether
# (demo page on http://localhost:7403/). The config is
# deploy/docker/tether.toml; mount your own over /etc/tether/tether.toml.
# deploy/compose.yaml runs two nodes on Redis behind HAProxy.

# --- build: the release binary -------------------------------------------
FROM rust:1-bookworm AS build
WORKDIR /src
# Only what the build reads (crates, the lockfile, and the files the gateway
# embeds: the demo page, the browser client, the example config), so that
# edits elsewhere (docs, deploy/) do not invalidate this layer.
COPY Cargo.toml Cargo.lock ./
# jemalloc's settings, compiled in (crates/tether/src/alloc.rs).
COPY .cargo .cargo
COPY crates crates
COPY clients/js/demo clients/js/demo
COPY clients/js/dist clients/js/dist
COPY config config
ENV CARGO_PROFILE_RELEASE_STRIP=symbols
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release -p tether --locked \
    && install -m 0755 target/release/tether /usr/local/bin/tether

# --- runtime: the binary, CA certificates, a user -------------------------
# Same Debian release as the build stage, so the binary's glibc matches.
FROM debian:bookworm-slim
# ca-certificates (for a JWKS or hooks URL over https) is not pinned: it
# follows the release's security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --user-group --home-dir /var/lib/tether --no-create-home \
       --shell /usr/sbin/nologin tether \
    && install -d -m 0700 -o tether -g tether /var/lib/tether \
    && install -d -m 0755 /etc/tether
COPY --from=build /usr/local/bin/tether /usr/local/bin/tether
COPY deploy/docker/tether.toml /etc/tether/tether.toml
# The generated admin key is kept here (docs/GATEWAY.md §5): mount a volume
# on it so that it survives the container.
ENV STATE_DIRECTORY=/var/lib/tether
# Numeric, so that Kubernetes' runAsNonRoot can check it.
USER 10001:10001
WORKDIR /var/lib/tether
# 7400 sessions over TCP, 7401 over WebSocket, 7402 admin API and /metrics,
# 7403 the demo page.
EXPOSE 7400 7401 7402 7403
# No curl in the image: bash's /dev/tcp asks the admin listener for /health.
# With admin.listen moved off 7402, override it (docker run --health-cmd,
# or healthcheck: in compose).
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s --retries=3 \
    CMD ["bash", "-c", "exec 3<>/dev/tcp/127.0.0.1/7402 && printf 'GET /health HTTP/1.0\\r\\n\\r\\n' >&3 && head -n 1 <&3 | grep -q ' 200 '"]
# SIGTERM (docker stop) drains: attached clients are told to come back
# within drain.window (5 s), then the process exits 0.
STOPSIGNAL SIGTERM
ENTRYPOINT ["tether"]
CMD ["serve", "--config", "/etc/tether/tether.toml"]
