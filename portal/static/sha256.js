// Slipway: SHA-256 (FIPS 180-4) that hashes incrementally: new SlipwaySha256(), update(bytes)
// any number of times, digest() -> 64 lower-case hex digits. crypto.subtle.digest() needs the
// whole input at once; a dataset file may be larger than the memory of the tab. No libraries.
(function (root) {
  "use strict";

  var K = new Uint32Array([
    0x428a2f98, 0x71374491, 0xb5c0fbcf, 0xe9b5dba5, 0x3956c25b, 0x59f111f1, 0x923f82a4, 0xab1c5ed5,
    0xd807aa98, 0x12835b01, 0x243185be, 0x550c7dc3, 0x72be5d74, 0x80deb1fe, 0x9bdc06a7, 0xc19bf174,
    0xe49b69c1, 0xefbe4786, 0x0fc19dc6, 0x240ca1cc, 0x2de92c6f, 0x4a7484aa, 0x5cb0a9dc, 0x76f988da,
    0x983e5152, 0xa831c66d, 0xb00327c8, 0xbf597fc7, 0xc6e00bf3, 0xd5a79147, 0x06ca6351, 0x14292967,
    0x27b70a85, 0x2e1b2138, 0x4d2c6dfc, 0x53380d13, 0x650a7354, 0x766a0abb, 0x81c2c92e, 0x92722c85,
    0xa2bfe8a1, 0xa81a664b, 0xc24b8b70, 0xc76c51a3, 0xd192e819, 0xd6990624, 0xf40e3585, 0x106aa070,
    0x19a4c116, 0x1e376c08, 0x2748774c, 0x34b0bcb5, 0x391c0cb3, 0x4ed8aa4a, 0x5b9cca4f, 0x682e6ff3,
    0x748f82ee, 0x78a5636f, 0x84c87814, 0x8cc70208, 0x90befffa, 0xa4506ceb, 0xbef9a3f7, 0xc67178f2]);

  function Sha256() {
    this.h = new Uint32Array([0x6a09e667, 0xbb67ae85, 0x3c6ef372, 0xa54ff53a,
                              0x510e527f, 0x9b05688c, 0x1f83d9ab, 0x5be0cd19]);
    this.w = new Uint32Array(64);
    this.buf = new Uint8Array(64);
    this.bufLen = 0;
    this.total = 0;        // bytes hashed so far (exact up to 2^53)
    this.finished = false;
  }

  // one 64-byte block of d starting at off
  Sha256.prototype._block = function (d, off) {
    var w = this.w, h = this.h, i, j, x, y, t1, t2;
    for (i = 0; i < 16; i++) {
      j = off + i * 4;
      w[i] = (d[j] << 24) | (d[j + 1] << 16) | (d[j + 2] << 8) | d[j + 3];
    }
    for (i = 16; i < 64; i++) {
      x = w[i - 15]; y = w[i - 2];
      w[i] = (((x >>> 7) | (x << 25)) ^ ((x >>> 18) | (x << 14)) ^ (x >>> 3)) +
             (((y >>> 17) | (y << 15)) ^ ((y >>> 19) | (y << 13)) ^ (y >>> 10)) +
             w[i - 16] + w[i - 7];
    }
    var a = h[0], b = h[1], c = h[2], e = h[4], f = h[5], g = h[6], dd = h[3], hh = h[7];
    for (i = 0; i < 64; i++) {
      t1 = (hh + (((e >>> 6) | (e << 26)) ^ ((e >>> 11) | (e << 21)) ^ ((e >>> 25) | (e << 7))) +
            ((e & f) ^ (~e & g)) + K[i] + w[i]) | 0;
      t2 = ((((a >>> 2) | (a << 30)) ^ ((a >>> 13) | (a << 19)) ^ ((a >>> 22) | (a << 10))) +
            ((a & b) ^ (a & c) ^ (b & c))) | 0;
      hh = g; g = f; f = e; e = (dd + t1) | 0; dd = c; c = b; b = a; a = (t1 + t2) | 0;
    }
    h[0] += a; h[1] += b; h[2] += c; h[3] += dd; h[4] += e; h[5] += f; h[6] += g; h[7] += hh;
  };

  // data: Uint8Array, ArrayBuffer or a string (hashed as UTF-8)
  Sha256.prototype.update = function (data) {
    if (this.finished) { throw new Error("SHA-256: update() after digest()"); }
    if (typeof data === "string") { data = new TextEncoder().encode(data); }
    else if (data instanceof ArrayBuffer) { data = new Uint8Array(data); }
    var n = data.length, pos = 0;
    this.total += n;
    if (this.bufLen > 0) {
      var take = Math.min(64 - this.bufLen, n);
      this.buf.set(data.subarray(0, take), this.bufLen);
      this.bufLen += take; pos = take;
      if (this.bufLen < 64) { return this; }
      this._block(this.buf, 0);
      this.bufLen = 0;
    }
    for (; pos + 64 <= n; pos += 64) { this._block(data, pos); }
    if (pos < n) { this.buf.set(data.subarray(pos), 0); this.bufLen = n - pos; }
    return this;
  };

  Sha256.prototype.digest = function () {
    if (!this.finished) {
      var bits = this.total * 8, buf = this.buf, i;
      buf[this.bufLen++] = 0x80;
      if (this.bufLen > 56) {
        buf.fill(0, this.bufLen); this._block(buf, 0); this.bufLen = 0;
      }
      buf.fill(0, this.bufLen);
      var hi = Math.floor(bits / 4294967296), lo = bits >>> 0;
      for (i = 0; i < 4; i++) {
        buf[56 + i] = (hi >>> (24 - 8 * i)) & 0xff;
        buf[60 + i] = (lo >>> (24 - 8 * i)) & 0xff;
      }
      this._block(buf, 0);
      this.finished = true;
    }
    var out = "";
    for (var k = 0; k < 8; k++) { out += ("00000000" + this.h[k].toString(16)).slice(-8); }
    return out;
  };

  root.SlipwaySha256 = Sha256;
  if (typeof module !== "undefined" && module.exports) { module.exports = Sha256; }
})(typeof window !== "undefined" ? window : this);
