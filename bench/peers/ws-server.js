// Reference server for BENCHMARKS.md: `ws` (npm) raw broadcast. Every body POSTed to
// /publish on PORT is sent as one text frame to every WebSocket client on the same port.
"use strict";
const http = require("http");
const { WebSocketServer, WebSocket } = require("ws");

const port = Number(process.env.PORT || 9002);
const server = http.createServer((req, res) => {
  if (req.method !== "POST") {
    res.writeHead(404).end();
    return;
  }
  const chunks = [];
  req.on("data", (c) => chunks.push(c));
  req.on("end", () => {
    const text = Buffer.concat(chunks).toString("utf8");
    for (const client of wss.clients) {
      if (client.readyState === WebSocket.OPEN) client.send(text);
    }
    res.writeHead(204).end();
  });
});
const wss = new WebSocketServer({ server, perMessageDeflate: false });
server.keepAliveTimeout = 60000;
server.listen(port, "127.0.0.1", () => console.error(`ws-server on ${port}`));
