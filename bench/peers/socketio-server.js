// Reference server for BENCHMARKS.md: Socket.IO 4.8 broadcast. Every JSON body POSTed to
// /publish on PORT is emitted as event "m" to every client (io.emit encodes it once).
"use strict";
const http = require("http");
const { Server } = require("socket.io");

const port = Number(process.env.PORT || 9003);
const server = http.createServer((req, res) => {
  if (req.method !== "POST" || !req.url.startsWith("/publish")) {
    if (!req.url.startsWith("/socket.io")) res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    try {
      io.emit("m", JSON.parse(Buffer.concat(chunks).toString("utf8")));
      res.writeHead(204).end();
    } catch (e) {
      res.writeHead(400).end(String(e));
    }
  });
});
const io = new Server(server, { transports: ["websocket"], perMessageDeflate: false, serveClient: false });
server.keepAliveTimeout = 60000;
server.listen(port, "127.0.0.1", () => console.error(`socketio-server on ${port}`));
