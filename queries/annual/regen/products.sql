-- The groups of the regenerative-medicine section: every product (public reference table).
-- 再生医療等製品の一覧（公開の参照表）
SELECT product_code AS key, name_ja, name_en, manufacturer_code AS manufacturer
FROM product
ORDER BY product_code
