// A tiny web app to deploy with Aeroplane. It answers on $PORT (default 3000).
const http = require("node:http");

const port = Number(process.env.PORT ?? 3000);
const greeting = process.env.GREETING ?? "Hello from Aeroplane";

http
  .createServer((req, res) => {
    console.log(`${req.method} ${req.url}`);
    res.writeHead(200, { "Content-Type": "text/plain; charset=utf-8" });
    res.end(`${greeting}\n`);
  })
  .listen(port, () => console.log(`Server listening on port ${port}`));
