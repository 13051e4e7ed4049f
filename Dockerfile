# syntax=docker/dockerfile:1
# Image of the pullsecret-injector webhook: `make docker-build`, or `make docker-buildx` for several
# platforms. The build stage runs on the build machine's platform and cross-compiles for the target one.

ARG GO_VERSION=1.26

FROM --platform=$BUILDPLATFORM golang:${GO_VERSION} AS build
WORKDIR /src
# Modules first, in their own layer: it is rebuilt only when go.mod or go.sum change.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG TARGETOS
ARG TARGETARCH
# What --version prints and pullsecret_injector_build_info shows; `make docker-build` passes them from git.
ARG VERSION=dev
ARG COMMIT=unknown
ARG VERSION_PKG=github.com/pullsecret-injector/pullsecret-injector/internal/version
# The same command as `make build` (test/chart checks that they agree), for the target platform.
RUN GOOS=${TARGETOS} GOARCH=${TARGETARCH} CGO_ENABLED=0 go build -trimpath -ldflags "-X ${VERSION_PKG}.Version=${VERSION} -X ${VERSION_PKG}.Commit=${COMMIT}" -o /out/pullsecret-injector .

FROM gcr.io/distroless/static:nonroot
COPY --from=build /out/pullsecret-injector /pullsecret-injector
# distroless' nonroot user; the chart's securityContext runs as the same IDs.
USER 65532:65532
ENTRYPOINT ["/pullsecret-injector"]
