// dns-packet's record type table (node_modules/dns-packet/types.js), which its own typings do not declare.
declare module "dns-packet/types.js" {
  const types: { toString(type: number): string; toType(name: string): number };
  export default types;
}
