// A SignalR client for herald's integration tests, built on the official @microsoft/signalr
// package. It connects to a base URL (negotiate → redirect → transport), listens for the given
// targets and prints one JSON line per event on stdout:
//   {"event":"connected","connectionId":"..."}  {"event":"message","target":"...","args":[...]}
//   {"event":"closed","error":"..."}            {"event":"error","error":"..."}
// and, with --trace-received, {"event":"received","at":MILLIS} each time the transport
// receives data (Pings included), so a test can see how long the server stayed silent.
//
// usage: node listen.js --url URL [--transport WebSockets|ServerSentEvents|LongPolling]
//          [--protocol json|messagepack] [--target NAME]... [--token JWT] [--count N]
//          [--header NAME=VALUE]... [--reconnect] [--stateful] [--trace-received]
// --stateful builds the connection withStatefulReconnect() (WebSockets only).
"use strict";
const signalR = require("@microsoft/signalr");
const { MessagePackHubProtocol } = require("@microsoft/signalr-protocol-msgpack");

function parseArgs(argv) {
  const opts = { targets: [], headers: {}, transport: "WebSockets", protocol: "json", count: 0 };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    const next = () => argv[++i];
    if (a === "--url") opts.url = next();
    else if (a === "--transport") opts.transport = next();
    else if (a === "--protocol") opts.protocol = next();
    else if (a === "--target") opts.targets.push(next());
    else if (a === "--token") opts.token = next();
    else if (a === "--count") opts.count = Number(next());
    else if (a === "--reconnect") opts.reconnect = true;
    else if (a === "--stateful") opts.stateful = true;
    else if (a === "--trace-received") opts.traceReceived = true;
    else if (a === "--header") {
      const [k, ...v] = next().split("=");
      opts.headers[k] = v.join("=");
    } else throw new Error(`unknown argument ${a}`);
  }
  if (!opts.url) throw new Error("--url is required");
  if (opts.targets.length === 0) opts.targets.push("statusUpdate");
  return opts;
}

function emit(obj) {
  process.stdout.write(JSON.stringify(obj) + "\n");
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const httpOptions = {
    transport: signalR.HttpTransportType[opts.transport],
    headers: opts.headers,
  };
  if (opts.token) httpOptions.accessTokenFactory = () => opts.token;
  // Warnings and errors go to stderr as with LogLevel.Warning; the transports' Trace line
  // "data received" becomes a "received" event when asked for.
  const logger = {
    log(level, message) {
      if (level >= signalR.LogLevel.Warning && level !== signalR.LogLevel.None) {
        console.error(`[${signalR.LogLevel[level]}] ${message}`);
      } else if (opts.traceReceived && level === signalR.LogLevel.Trace && message.includes("data received")) {
        emit({ event: "received", at: Date.now() });
      }
    },
  };
  let builder = new signalR.HubConnectionBuilder()
    .withUrl(opts.url, httpOptions)
    .configureLogging(logger);
  if (opts.protocol === "messagepack") builder = builder.withHubProtocol(new MessagePackHubProtocol());
  if (opts.reconnect) builder = builder.withAutomaticReconnect([0, 500, 1000]);
  if (opts.stateful) builder = builder.withStatefulReconnect();
  const connection = builder.build();

  let received = 0;
  for (const target of opts.targets) {
    connection.on(target, (...args) => {
      emit({ event: "message", target, args });
      received++;
      if (opts.count && received >= opts.count) {
        connection.stop().then(() => process.exit(0));
      }
    });
  }
  connection.onclose((err) => {
    emit({ event: "closed", error: err ? String(err.message || err) : null });
    process.exit(0);
  });
  connection.onreconnecting((err) => emit({ event: "reconnecting", error: err ? String(err) : null }));
  connection.onreconnected((id) => emit({ event: "reconnected", connectionId: id }));
  try {
    await connection.start();
  } catch (err) {
    emit({ event: "error", error: String(err && err.message ? err.message : err) });
    process.exit(2);
  }
  emit({ event: "connected", connectionId: connection.connectionId, transport: opts.transport, protocol: opts.protocol });
}

process.on("SIGTERM", () => process.exit(0));
main().catch((err) => {
  emit({ event: "error", error: String(err && err.message ? err.message : err) });
  process.exit(2);
});
