// Minimal typings for ltx 3 (the package ships none).
declare module 'ltx' {
  export type Node = Element | string;
  export class Element {
    constructor(name: string, attrs?: Record<string, string | number | undefined | null>);
    name: string;
    attrs: Record<string, string>;
    parent: Element | null;
    children: Node[];
    is(name: string, xmlns?: string): boolean;
    getName(): string;
    getNS(): string | undefined;
    getXmlns(): Record<string, string>;
    getAttr(name: string, xmlns?: string): string | undefined;
    getChild(name: string, xmlns?: string): Element | undefined;
    getChildren(name: string, xmlns?: string): Element[];
    getChildByAttr(attr: string, val: string, xmlns?: string, recursive?: boolean): Element | undefined;
    getText(): string;
    getChildText(name: string, xmlns?: string): string | null;
    getChildElements(): Element[];
    root(): Element;
    up(): Element;
    c(name: string, attrs?: Record<string, string | number | undefined | null>): Element;
    cnode(child: Element): Element;
    append(...nodes: Node[]): Element;
    prepend(...nodes: Node[]): Element;
    t(text: string): Element;
    remove(el: Element | string, xmlns?: string): Element;
    text(val?: string): string;
    attr(attr: string, val?: string | null): string | undefined;
    toString(): string;
  }
  export function createElement(name: string, attrs?: Record<string, unknown> | null, ...children: Node[]): Element;
  export function escapeXML(s: string): string;
  export function unescapeXML(s: string): string;
  export function escapeXMLText(s: string): string;
  export function parse(s: string): Element;
  export function clone(el: Element): Element;
  export function equal(a: Element, b: Element): boolean;
  export function stringify(el: Element, indent?: number): string;
}
