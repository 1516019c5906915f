# The operator's image for people with Docker: the same layout `make image` (hack/build-image.sh) packs with umoci
# and no daemon. A static musl binary and /etc/passwd + /etc/group naming the non-root user 65532; nothing else.
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools
WORKDIR /src
# The whole tree (see .dockerignore), as make image builds it: the manifest names benches and tests too.
COPY . .
ENV CC_x86_64_unknown_linux_musl=musl-gcc
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --package databricks-oauth-operator --bin databricks-oauth-operator

FROM scratch
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG SOURCE=""
LABEL org.opencontainers.image.title=databricks-oauth-operator \
      org.opencontainers.image.description="Kubernetes operator for Databricks OAuth connections" \
      org.opencontainers.image.licenses=Apache-2.0 \
      org.opencontainers.image.version=$VERSION \
      org.opencontainers.image.revision=$REVISION \
      org.opencontainers.image.source=$SOURCE
COPY hack/image/rootfs/ /
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/databricks-oauth-operator /databricks-oauth-operator
USER 65532:65532
ENTRYPOINT ["/databricks-oauth-operator"]
CMD ["run"]
