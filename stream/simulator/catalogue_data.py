"""The simulator's static data: chains and their store formats, product groups, basket mixes,
and the GTIN and card-number check digits."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class _Chain:
    name: str
    prefix: str  # store id prefix
    receipt_share: float  # share of all receipts
    store_share: float  # share of all outlets
    basket: str  # product pool; "" for total-only chains
    mean_lines: float  # mean line count (product level) or mean total in cents (total only)


# Receipt shares: the four grocery chains carry ~80 % of receipts. Outlet shares roughly follow
# the real networks (many S-markets, Alepas and restaurants, few department stores).
_CHAINS = (
    _Chain("S_MARKET", "SM", 0.35, 0.22, "grocery", 13.0),
    _Chain("PRISMA", "PR", 0.21, 0.05, "hypermarket", 15.0),
    _Chain("ALEPA", "AL", 0.14, 0.10, "convenience", 7.0),
    _Chain("SALE", "SA", 0.12, 0.09, "convenience", 8.0),
    _Chain("ABC", "AB", 0.05, 0.09, "station", 2.5),
    _Chain("FOOD_MARKET_HERKKU", "FH", 0.015, 0.01, "grocery", 11.0),
    _Chain("SOKOS", "SO", 0.015, 0.01, "department", 2.5),
    _Chain("EMOTION", "EM", 0.005, 0.01, "beauty", 2.0),
    _Chain("MARKS_SPENCER", "MS", 0.005, 0.005, "marks", 4.0),
    _Chain("KODIN_TERRA", "KT", 0.005, 0.005, "hardware", 2.5),
    _Chain("S_RAUTA", "SR", 0.01, 0.03, "hardware", 3.0),
    _Chain("PRISMA_RAUTA", "RP", 0.005, 0.005, "hardware", 3.0),
    _Chain("HOTEL", "HO", 0.01, 0.04, "", 16_000.0),
    _Chain("RESTAURANT", "RE", 0.04, 0.30, "", 2_800.0),
    _Chain("PARTNER", "PA", 0.02, 0.03, "", 4_500.0),
)
CHAINS = tuple(c.name for c in _CHAINS)
PRODUCT_LEVEL_CHAINS = tuple(c.name for c in _CHAINS if c.basket)


@dataclass(frozen=True)
class _Group:
    name: str
    food: bool
    vegetable: bool
    co2e: float | None  # typical kg CO2e per kg at the store gate; None = no factor
    share: float  # share of the catalogue
    weighed: float  # share of products sold by weight (unit KG)
    price: tuple[int, int]  # cents per piece
    kg_price: tuple[int, int]  # cents per kg (weighed products)
    kg_grams: tuple[int, int]  # grams bought of a weighed product
    sizes: tuple[int, ...]  # net weights in grams of packed products; () = none
    origin: tuple[float, float, float, float]  # weights of ORIGINS
    names: tuple[str, ...]
    bonus: bool = True  # bonus eligible (alcohol and gift cards are not)
    liquid: bool = False  # sizes are millilitres (name says "l")


def _names(text: str) -> tuple[str, ...]:
    return tuple(n.strip() for n in text.split(","))


_NF = (0.0, 0.10, 0.50, 0.40)  # non-food origin mix: mostly imported or unknown
_NO: tuple[int, int] = (0, 0)

# One row per product group. Columns: name, food, vegetable, CO2e (kg/kg, None = no factor),
# share of catalogue, share weighed, cents per piece, cents per kg, grams bought when weighed,
# pack sizes (g or ml), origin weights (FINNISH_RAW, FINNISH_MADE, FOREIGN, UNKNOWN), names.
# fmt: off
_GROUPS = (
    _Group("VEGETABLES", True, True, 0.9, 0.08, 0.5, (99, 399), (129, 799), (150, 1500),
           (150, 250, 300, 400, 500, 1000), (0.45, 0.05, 0.45, 0.05), _names(
               "Tomato, Cucumber, Carrot, Potato, Onion, Iceberg lettuce, Bell pepper, "
               "White cabbage, Broccoli, Beetroot, Swede, Leek, Zucchini, Cauliflower, Spinach, "
               "Garlic, Parsnip, Red onion, Celery, Sweet potato")),
    _Group("FRUIT_BERRIES", True, True, 0.7, 0.06, 0.5, (129, 599), (99, 1499), (150, 2000),
           (125, 200, 250, 500, 1000), (0.15, 0.05, 0.75, 0.05), _names(
               "Apple, Banana, Orange, Pear, Grapes, Lemon, Lingonberries, Bilberries, "
               "Strawberries, Raspberries, Kiwi, Mandarin, Melon, Plum, Blueberries, "
               "Sea buckthorn berries")),
    _Group("MUSHROOMS", True, True, 1.0, 0.01, 0.3, (199, 499), (599, 1999), (100, 600),
           (200, 250, 400), (0.60, 0.10, 0.25, 0.05), _names(
               "Button mushrooms, Chanterelles, Oyster mushrooms, Shiitake, Porcini, "
               "Funnel chanterelles")),
    _Group("DAIRY", True, False, 3.0, 0.10, 0.02, (79, 899), (1200, 3500), (150, 600),
           (200, 250, 500, 1000, 1500), (0.70, 0.12, 0.15, 0.03), _names(
               "Milk, Skimmed milk, Yoghurt, Quark, Butter, Edam cheese, Emmental cheese, Cream, "
               "Sour cream, Buttermilk, Cottage cheese, Squeaky cheese, Creme fraiche, "
               "Lactose-free milk")),
    _Group("MEAT", True, False, 7.0, 0.07, 0.15, (249, 1499), (899, 3999), (150, 1200),
           (300, 400, 500, 600, 1000), (0.75, 0.10, 0.13, 0.02), _names(
               "Beef mince, Pork mince, Chicken fillet strips, Pork chops, Sausage, "
               "Ham cold cuts, Meatballs, Turkey fillet, Lamb chops, Sauteed reindeer, "
               "Chicken drumsticks, Smoked ham")),
    _Group("FISH", True, False, 4.0, 0.03, 0.3, (299, 1499), (1299, 3999), (150, 900),
           (150, 200, 300, 400), (0.30, 0.25, 0.40, 0.05), _names(
               "Salmon fillet, Rainbow trout, Baltic herring, Vendace, Pike-perch fillet, "
               "Tuna in water, Herring in mustard sauce, Shrimps, Cod fillet")),
    _Group("EGGS", True, False, 2.5, 0.01, 0.0, (199, 449), _NO, _NO,
           (378, 600, 630), (0.90, 0.02, 0.05, 0.03), _names(
               "Eggs 6 pcs, Eggs 10 pcs, Free-range eggs, Organic eggs")),
    _Group("BREAD", True, False, 1.0, 0.06, 0.05, (99, 499), (499, 1299), (100, 600),
           (270, 300, 400, 500, 640), (0.50, 0.35, 0.12, 0.03), _names(
               "Rye bread, Oat bread, Toast bread, Crispbread, Karelian pasties, Baguette, "
               "Cinnamon buns, Rye crisps, Multigrain rolls")),
    _Group("DRY_GOODS", True, False, 1.5, 0.12, 0.01, (89, 599), (299, 1499), (100, 800),
           (200, 400, 500, 750, 1000, 2000), (0.25, 0.25, 0.45, 0.05), _names(
               "Oat flakes, Wheat flour, Pasta, Rice, Coffee, Tea, Sugar, Breakfast cereal, "
               "Rye flour, Tomato sauce, Canned tomatoes, Ketchup, Mustard, Rapeseed oil, Salt, "
               "Spice mix, Peanut butter, Muesli, Beans")),
    _Group("FROZEN", True, False, 2.0, 0.06, 0.0, (149, 899), _NO, _NO,
           (250, 300, 400, 500, 750, 1000), (0.30, 0.20, 0.45, 0.05), _names(
               "Frozen pizza, Frozen peas, Fish fingers, Ice cream, Frozen berries, "
               "Frozen vegetable mix, Frozen meatballs, Frozen fries, Frozen salmon soup")),
    _Group("BEVERAGES", True, False, 0.5, 0.07, 0.0, (69, 499), _NO, _NO,
           (330, 500, 1000, 1500), (0.15, 0.50, 0.30, 0.05), _names(
               "Mineral water, Orange juice, Apple juice, Cola, Lemonade, Oat drink, "
               "Energy drink, Lingonberry drink, Sparkling water, Iced coffee"), liquid=True),
    _Group("ALCOHOL", False, False, None, 0.05, 0.0, (149, 2499), _NO, _NO,
           (330, 500, 750), (0.15, 0.50, 0.30, 0.05), _names(
               "Lager beer, Cider, Long drink, Hard seltzer, Pale ale, Stout, "
               "Fermented wine drink"), bonus=False, liquid=True),
    _Group("SWEETS", True, False, 3.0, 0.06, 0.08, (99, 599), (999, 1699), (100, 500),
           (50, 100, 150, 200, 350), (0.10, 0.50, 0.35, 0.05), _names(
               "Milk chocolate bar, Liquorice, Salty liquorice, Pick and mix, Chewing gum, "
               "Biscuits, Crisps, Fruit gums, Pastilles, Chocolate box")),
    _Group("READY_MEALS", True, False, 3.0, 0.05, 0.0, (249, 899), _NO, _NO,
           (300, 350, 400, 500), (0.35, 0.45, 0.15, 0.05), _names(
               "Macaroni casserole, Salmon soup, Meat soup, Lasagne, Chicken curry, Pea soup, "
               "Vegetable patties, Sushi box, Salad box, Pizza slice")),
    _Group("HOUSEHOLD", False, False, None, 0.05, 0.0, (99, 1499), _NO, _NO, (), _NF, _names(
               "Dish soap, Laundry detergent, Toilet paper, Kitchen roll, Bin bags, "
               "Dishwasher tablets, Sponges, Aluminium foil, Cling film, Candles, Batteries, "
               "Light bulb")),
    _Group("HYGIENE", False, False, None, 0.05, 0.0, (149, 1999), _NO, _NO, (), _NF, _names(
               "Shampoo, Toothpaste, Toothbrush, Shower gel, Deodorant, Hand cream, Face cream, "
               "Sunscreen, Razor, Cotton pads, Plasters, Diapers")),
    _Group("PET_SUPPLIES", False, False, None, 0.02, 0.0, (149, 2999), _NO, _NO, (), _NF, _names(
               "Dry cat food, Wet dog food, Cat litter, Dog treats, Bird seed")),
    _Group("HARDWARE", False, False, None, 0.08, 0.03, (199, 19999), (499, 1999), (100, 2000),
           (), (0.0, 0.20, 0.55, 0.25), _names(
               "Screws, Nails, Hammer, Screwdriver set, Drill bits, Wall paint 2.7 l, "
               "Paint brush, Masking tape, Sandpaper, Wall plugs, Extension cord, Work gloves, "
               "Silicone sealant, Spirit level, Tape measure, Timber 48x98, Insulation roll, "
               "Cement")),
    _Group("GARDEN", False, False, None, 0.03, 0.0, (199, 9999), _NO, _NO, (), _NF, _names(
               "Potting soil, Fertiliser, Flower seeds, Garden hose, Rake, Snow shovel, "
               "Plant pot, Bird feeder")),
    _Group("HOME", False, False, None, 0.04, 0.0, (299, 14999), _NO, _NO, (), _NF, _names(
               "Towel, Bed linen set, Mug, Plate, Frying pan, Saucepan, Kitchen knife, "
               "Cutting board, Vase, Cushion, Blanket, Table lamp, Storage box")),
    _Group("CLOTHING", False, False, None, 0.06, 0.0, (499, 19999), _NO, _NO, (), _NF, _names(
               "T-shirt, Jeans, Socks, Underwear, Hoodie, Winter jacket, Wool cap, Mittens, "
               "Dress, Shirt, Trousers, Sneakers, Rain boots, Scarf")),
    _Group("COSMETICS", False, False, None, 0.03, 0.0, (499, 7999), _NO, _NO, (), _NF, _names(
               "Lipstick, Mascara, Perfume, Nail polish, Foundation, Eye shadow palette, "
               "Face serum")),
    _Group("ELECTRONICS", False, False, None, 0.01, 0.0, (999, 39999), _NO, _NO, (), _NF,
           _names("Headphones, Phone charger, USB cable, Bluetooth speaker, Power bank, "
                  "Electric kettle, Coffee maker, Toaster")),
    _Group("GIFT_CARDS", False, False, None, 0.002, 0.0, (2000, 10000), _NO, _NO, (),
           (0.0, 0.0, 0.0, 1.0), ("Gift card",), bonus=False),
)

# Per-name CO2e factors where the group's typical value would be badly off (kg CO2e / kg).
_CO2E_BY_NAME = {
    "Beef mince": 26.0, "Lamb chops": 24.0, "Sauteed reindeer": 9.0, "Pork mince": 6.5,
    "Pork chops": 6.5, "Chicken fillet strips": 4.5, "Chicken drumsticks": 4.0,
    "Turkey fillet": 5.0, "Butter": 9.0, "Edam cheese": 10.0, "Emmental cheese": 11.0,
    "Squeaky cheese": 10.0, "Milk": 1.2, "Skimmed milk": 1.1, "Lactose-free milk": 1.2,
    "Buttermilk": 1.2, "Yoghurt": 1.6, "Coffee": 8.0, "Rice": 3.0, "Tomato": 1.2,
    "Bell pepper": 1.4, "Potato": 0.2, "Carrot": 0.2, "Banana": 0.9, "Oat drink": 0.4,
    "Mineral water": 0.2, "Milk chocolate bar": 4.5,
}

# Product-group weights of a basket per store format (the chain's "basket").
_GROCERY = {
    "VEGETABLES": 13, "FRUIT_BERRIES": 9, "MUSHROOMS": 1, "DAIRY": 16, "MEAT": 9, "FISH": 3,
    "EGGS": 2, "BREAD": 9, "DRY_GOODS": 10, "FROZEN": 4, "BEVERAGES": 6, "ALCOHOL": 4,
    "SWEETS": 5, "READY_MEALS": 4, "HOUSEHOLD": 3, "HYGIENE": 2, "PET_SUPPLIES": 1,
    "GIFT_CARDS": 0.1,
}
_BASKETS: dict[str, dict[str, float]] = {
    "grocery": _GROCERY,
    "hypermarket": {**_GROCERY, "HOME": 2, "CLOTHING": 2, "HARDWARE": 1, "ELECTRONICS": 0.5,
                    "GARDEN": 0.5, "COSMETICS": 0.5},
    "convenience": {**_GROCERY, "READY_MEALS": 7, "BEVERAGES": 9, "ALCOHOL": 5, "HOUSEHOLD": 2,
                    "PET_SUPPLIES": 0.5},
    "station": {"BEVERAGES": 20, "READY_MEALS": 20, "SWEETS": 20, "BREAD": 8, "DAIRY": 6,
                "ALCOHOL": 5, "DRY_GOODS": 5, "FRUIT_BERRIES": 3, "HOUSEHOLD": 3, "HYGIENE": 2},
    "department": {"CLOTHING": 40, "COSMETICS": 20, "HOME": 20, "HYGIENE": 10, "SWEETS": 5,
                   "ELECTRONICS": 3, "GIFT_CARDS": 1},
    "beauty": {"COSMETICS": 60, "HYGIENE": 35, "GIFT_CARDS": 1},
    "marks": {"CLOTHING": 45, "SWEETS": 15, "DRY_GOODS": 15, "READY_MEALS": 10, "HOME": 10,
              "BEVERAGES": 5},
    "hardware": {"HARDWARE": 60, "GARDEN": 20, "HOUSEHOLD": 10, "HOME": 8, "ELECTRONICS": 2},
    # lines that a total-only till (restaurant, hotel bar, partner) sends although it should not
    "restaurant": {"READY_MEALS": 50, "BEVERAGES": 30, "ALCOHOL": 20},
}
# fmt: on
PRODUCT_GROUPS = tuple(g.name for g in _GROUPS)


# GS1 prefixes used for non-Finnish codes (Germany, Sweden, Netherlands, Italy, Denmark, ...).
_FOREIGN_PREFIXES = ("400", "401", "590", "730", "731", "871", "800", "570", "500", "700", "841")


def gtin_check_digit(body: str) -> int:
    """GS1 check digit of the first 12 digits of a GTIN-13 (weights 1,3,1,3,... from the left)."""
    total = sum(int(d) * (3 if i % 2 else 1) for i, d in enumerate(body))
    return (10 - total % 10) % 10


def is_valid_gtin(gtin: str) -> bool:
    """True for a 13-digit string whose last digit is the GS1 check digit of the first 12."""
    return len(gtin) == 13 and gtin.isdigit() and gtin_check_digit(gtin[:12]) == int(gtin[12])


def _luhn_digit(body: str) -> int:
    total = 0
    for i, d in enumerate(reversed(body)):
        n = int(d)
        if i % 2 == 0:
            n *= 2
            if n > 9:
                n -= 9
        total += n
    return (10 - total % 10) % 10
