# Multi-stage build of a static, non-root operator image.
FROM rust:1.95-bookworm AS build
RUN rustup target add x86_64-unknown-linux-musl && apt-get update && apt-get install -y --no-install-recommends musl-tools
WORKDIR /src
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY hack/control-plane.versions ./hack/control-plane.versions
RUN cargo build --release --locked --target x86_64-unknown-linux-musl --bin databricks-oauth-operator

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /src/target/x86_64-unknown-linux-musl/release/databricks-oauth-operator /databricks-oauth-operator
USER 65532:65532
ENTRYPOINT ["/databricks-oauth-operator"]
