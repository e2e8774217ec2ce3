// Peer for measurements: a plain Node.js `ws` echo server on 127.0.0.1:<port> (argv[2]).
// Run by `edge-load idle --server node benches/peers/node-ws/echo.mjs <port>`.
import { WebSocketServer } from "ws";

const port = Number(process.argv[2] || 18103);
const wss = new WebSocketServer({ host: "127.0.0.1", port, perMessageDeflate: false });
wss.on("connection", (ws) => {
  ws.on("message", (data, isBinary) => ws.send(data, { binary: isBinary }));
});
