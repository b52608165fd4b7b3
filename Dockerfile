# taskapi: a static binary on a distroless base (CA certificates, a non-root
# user, nothing else). Build: docker build -t taskapi .
FROM golang:1.26-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# The same command .ci/chroot-smoke builds with and then runs in an empty root.
RUN CGO_ENABLED=0 go build -trimpath -ldflags='-s -w' -o /out/taskapi .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/taskapi /taskapi
USER nonroot:nonroot
EXPOSE 8080
ENV PORT=8080
ENTRYPOINT ["/taskapi"]
