FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
# fhirauth/schemas links to ../schemas: the wheel takes the schemas from there.
COPY fhirauth ./fhirauth
COPY schemas ./schemas
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
RUN useradd --system --uid 10001 --home-dir /var/lib/fhirauth --create-home fhirauth
COPY --from=build /install /usr/local
COPY seed /usr/local/share/fhirauth/seed
ENV FHIRAUTH_STORAGE=sqlite:////var/lib/fhirauth/fhirauth.db \
    FHIRAUTH_HOST=0.0.0.0 \
    FHIRAUTH_PORT=8080
USER fhirauth
WORKDIR /var/lib/fhirauth
EXPOSE 8080
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD python -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status == 200 else 1)"
CMD ["fhirauth", "serve"]
