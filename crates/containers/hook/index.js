// airlock's runner container hook (docs/containers.md). It takes no decision: it hands the
// runner's request to airlock's container API for this job and relays what comes back
// (output, exit code, the response the runner reads). Everything is checked on the host.
'use strict'
const fs = require('fs')
const net = require('net')

const socket = process.env.AIRLOCK_CONTAINER_API || '/run/airlock/containers.sock'
const fail = (m) => {
  process.stderr.write(`airlock container hook: ${m}\n`)
  process.exit(1)
}

let input = ''
process.stdin.setEncoding('utf8')
process.stdin.on('data', (d) => { input += d })
process.stdin.on('end', () => {
  let responseFile = null
  try {
    responseFile = JSON.parse(input).responseFile || null
  } catch (e) {
    return fail(`the runner's request is not JSON: ${e.message}`)
  }
  let buf = ''
  let done = false
  const c = net.createConnection(socket, () => c.write(JSON.stringify({ request: input }) + '\n'))
  c.on('data', (d) => {
    buf += d.toString('utf8')
    let i
    while ((i = buf.indexOf('\n')) >= 0) {
      const m = JSON.parse(buf.slice(0, i))
      buf = buf.slice(i + 1)
      if (m.o !== undefined) process.stdout.write(Buffer.from(m.o, 'base64'))
      else if (m.e !== undefined) process.stderr.write(Buffer.from(m.e, 'base64'))
      else if (m.exit !== undefined) {
        done = true
        if (m.response !== undefined && m.response !== null && responseFile) {
          fs.appendFileSync(responseFile, JSON.stringify(m.response) + '\n')
        }
        process.exitCode = m.exit
        c.end()
      }
    }
  })
  c.on('error', (e) => fail(`cannot reach the container API at ${socket}: ${e.message}`))
  c.on('close', () => { if (!done) fail('the container API closed the connection early') })
})
