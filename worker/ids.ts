/** Prefixed random identifiers and secrets. */

const alphabet = "0123456789abcdefghijklmnopqrstuvwxyz";

function randomString(length: number): string {
  // 36 symbols: reject bytes ≥ 252 so every symbol is equally likely.
  let out = "";
  while (out.length < length) {
    for (const byte of crypto.getRandomValues(new Uint8Array(length * 2))) {
      if (byte < 252 && out.length < length) out += alphabet[byte % 36];
    }
  }
  return out;
}

export type IdPrefix = "prj" | "svc" | "dep" | "key" | "run" | "lse";

/** A resource id such as `dep_4k2…`: 16 random symbols, about 82 bits. */
export const newId = (prefix: IdPrefix) => `${prefix}_${randomString(16)}`;

/** A bearer secret such as `ap_…`: 40 random symbols, about 206 bits. */
export const newSecret = (prefix: "ap" | "apr" | "aph") =>
  `${prefix}_${randomString(40)}`;
