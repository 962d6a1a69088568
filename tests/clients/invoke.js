// A SignalR client for herald's client-event tests, built on the official @microsoft/signalr
// package: it connects through negotiate, listens for the given targets and, once connected,
// runs each --invoke in order with connection.invoke(), printing one JSON line per event:
//   {"event":"connected","connectionId":"..."}   {"event":"message","target":"...","args":[...]}
//   {"event":"result","method":"...","result":...}   {"event":"refused","method":"...","error":"..."}
//   {"event":"invoked"} after the last invocation; it then keeps listening until killed.
//
// usage: node invoke.js --url URL [--protocol json|messagepack] [--target NAME]...
//          [--header NAME=VALUE]... [--invoke METHOD=JSON_ARRAY_OF_ARGUMENTS]...
"use strict";
const signalR = require("@microsoft/signalr");
const { MessagePackHubProtocol } = require("@microsoft/signalr-protocol-msgpack");

function parseArgs(argv) {
  const opts = { targets: [], headers: {}, invokes: [], protocol: "json" };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => argv[++i];
    if (a === "--url") opts.url = next();
    else if (a === "--protocol") opts.protocol = next();
    else if (a === "--target") opts.targets.push(next());
    else if (a === "--header") {
      const [k, ...v] = next().split("=");
      opts.headers[k] = v.join("=");
    } else if (a === "--invoke") {
      const [method, ...rest] = next().split("=");
      opts.invokes.push({ method, args: JSON.parse(rest.join("=") || "[]") });
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!opts.url) throw new Error("--url is required");
  return opts;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const logger = {
    log(level, message) {
      if (level >= signalR.LogLevel.Warning && level !== signalR.LogLevel.None) {
        console.error(`[${signalR.LogLevel[level]}] ${message}`);
      }
    },
  };
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(opts.url, { transport: signalR.HttpTransportType.WebSockets, headers: opts.headers })
    .configureLogging(logger);
  if (opts.protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  const connection = builder.build();
  for (const target of opts.targets) {
    connection.on(target, (...args) => emit({ event: "message", target, args }));
  }
  connection.onclose((err) => {
    emit({ event: "closed", error: err ? String(err.message || err) : null });
    process.exit(0);
  });
  await connection.start();
  emit({ event: "connected", connectionId: connection.connectionId });
  for (const { method, args } of opts.invokes) {
    try {
      const result = await connection.invoke(method, ...args);
      emit({ event: "result", method, result: result === undefined ? null : result });
    } catch (err) {
      emit({ event: "refused", method, error: String(err && err.message ? err.message : err) });
    }
  }
  emit({ event: "invoked" });
}

process.on("SIGTERM", () => process.exit(0));
main().catch((err) => {
  emit({ event: "error", error: String(err && err.message ? err.message : err) });
  process.exit(2);
});
